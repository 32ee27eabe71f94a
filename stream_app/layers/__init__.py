"""The layers users write: behaviours and cell cultures, reactor handlers."""
