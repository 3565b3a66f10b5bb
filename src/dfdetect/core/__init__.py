"""The bottom layer: facts every other layer may use (device choice, numeric precision), importing nothing above."""
