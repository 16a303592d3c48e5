"""custseg: customer segmentation from transaction logs, as Spark jobs writing Delta tables."""

__version__ = "0.1.0"
