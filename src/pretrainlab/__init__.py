"""pretrainlab: a fast, hackable framework for language-model pre-training research."""

__version__ = "0.1.0"
