"""Evaluation protocols on a frozen or fine-tuned trunk (linear probe, kNN, semi-supervised, VOC07 SVM)."""
