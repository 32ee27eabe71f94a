"""Effects: records on ``<app_id>.effects`` and the handlers that dispatch them."""
