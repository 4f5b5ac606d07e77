"""The Streamlit lab. Only this package imports streamlit or plotly.

- ``main.py``       entry point: ``streamlit run app/main.py`` (page config, navigation, sidebar)
- ``runs_data.py``  run store -> pandas frames (no streamlit): table of runs, metrics, layers
- ``charts.py``     pure chart builders: frames in, plotly figures out; one color per run
- ``verdicts.py``   what the runs on screen show, per claim of the papers: numbers in, sentence out
- ``checks.py``     validation of what the browser sends: depths, dataset paths, uploads
- ``ui.py``         streamlit helpers shared by the pages (store, caching, pickers, exports)
- ``tasks.py``      background analysis jobs (detached processes writing to a run's cache/)
- ``app_pages/``    one file per page; each also runs on its own (AppTest.from_file) in a
                    process with the repository root on sys.path (main.py puts it there
                    under ``streamlit run``, tests/conftest.py under pytest)
"""
