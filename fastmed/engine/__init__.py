"""Shared training machinery: devices, seeding, progress, run folders,
checkpoints and the fit loop. Tasks import from here; this package never
imports from a task."""
