"""Read Tstat flow logs and ship them, as JSON flow objects, to a central archive."""

__version__ = "1.0.0"
