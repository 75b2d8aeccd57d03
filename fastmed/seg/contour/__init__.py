"""Segmentation from contour (outline) annotations: ``fastmed seg train --method contour``.

``contours`` reads GeoJSON outlines and rasterizes them; ``correlation`` turns
them into per-object and fused correlation maps through the exact Euclidean
feature transform (``fastmed.kernels.distance_transform_edt_batch``);
``dataset`` serves image, filled mask and correlation target; ``losses`` and
``train`` fit a U-Net with a mask head and a correlation head.
"""
