"""Distillation: a small student from a frozen teacher (mutual information with a learnable prior, Hinton KD)."""
from fastmed.distill.joint import joint_distribution, mutual_information
from fastmed.distill.kd import kd_loss
from fastmed.distill.mi_loss import GaussianPrior, MutualInfoLoss

__all__ = ["joint_distribution", "mutual_information", "kd_loss", "GaussianPrior", "MutualInfoLoss"]
