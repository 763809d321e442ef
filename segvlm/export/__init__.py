"""Exports of a :class:`segvlm.VideoSegmentation`: COCO (RLE), overlay video, supervision."""
