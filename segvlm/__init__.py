"""segvlm: text-grounded video segmentation and masks as a VLM input modality."""
__version__ = "0.1.0"
