"""The embedded mini benchmark: procedurally generated faces, videos, manipulations and
generated-image families, deterministic from a seed and cached on disk (see ``corpus``)."""
