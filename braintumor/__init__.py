"""braintumor: brain-tumour MRI classification experiments."""

__version__ = "0.1.0"
