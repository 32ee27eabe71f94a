"""HTTP views on the worker (Faust web): inspection of cells, parked cells and metrics."""
