"""Survey data layer: one HDF5-shard format for real and simulated galaxies."""
