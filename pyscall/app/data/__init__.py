"""Streaming interaction data: loaders, the packaged Online Retail stream, a synthetic generator,
and the segmentation of a stream into train/valid/test segments (SCALL.md section 1)."""
from .errors import DataFormatError
from .interactions import Interactions
from .loaders import FORMATS, load, load_amazon, load_csv, load_movielens, load_online_retail, load_yelp
from .stream import Segment, Stream, prepare_stream
from .synthetic import synthetic_stream

__all__ = [
    "DataFormatError", "Interactions", "FORMATS", "load", "load_amazon", "load_csv", "load_movielens",
    "load_online_retail", "load_yelp", "Segment", "Stream", "prepare_stream", "synthetic_stream",
]
