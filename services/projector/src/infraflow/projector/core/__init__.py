"""The projector's pure logic: folding run events into run, step and resource state, building
views, and the arithmetic of metrics and estimates. Nothing here does I/O or reads the clock."""
