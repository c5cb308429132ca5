"""datacomp: the DataComp workflow, download -> filter -> reshard -> train -> evaluate -> report."""

__version__ = "0.1.0"
