"""A DVC-versioned data and model pipeline for MovieLens rating prediction: the library the stages call."""
