"""Studies that explain degradation: signal propagation at init (signal), block deletion
(lesion), gradient shattering (shattering), loss landscape slices (landscape). Each returns
DataFrames; the long ones take ``progress(fraction, message)`` and stop when it raises
:class:`analysis.progress.Cancelled`."""
