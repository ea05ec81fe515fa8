"""mmd: keeps multimodal misinformation and hateful-meme detectors fresh."""

__version__ = "0.1.0"
