"""The bottom layer: errors, models, outcomes, validation and text; the standard library only."""
