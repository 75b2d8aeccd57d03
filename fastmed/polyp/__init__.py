"""The polyp task: recognizer training and prediction, generation of diverse
labelled images, and self-supervised pre-training."""
