"""Segmentation from few exact and many rough masks (``fastmed seg train --method reweight``).

Each rough image k has a weight gamma_k in [0, 1], moved every tau steps by
beta * g_S . g_k (g_S: mean gradient of an exact batch; g_k: the rough image's
own gradient, from ``fastmed.kernels.per_sample_grad_dot``) and used in a
weighted loss; mixed images and a main/auxiliary model pair with cross
pseudo-labels add the objective sum gamma_i l_i + gamma_j l_j + lambda (gamma_i + gamma_j)/2 r_ij.
Files: ``losses`` (per-sample losses), ``weights`` (the gamma table and its
update), ``mixing`` (mixed images), ``train`` (the trainer), ``demo_stage``.
"""
