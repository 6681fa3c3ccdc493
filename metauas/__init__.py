"""metauas: synthetic change pairs, MetaUAS training and one-prompt anomaly segmentation."""

__version__ = "0.1.0"
