"""galclip: joint image-spectrum galaxy representations for merger finding."""
__version__ = "0.1.0"
