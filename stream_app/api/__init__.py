"""What users write: behaviours, cultures, event-sourced entities and the types their
callbacks use."""
