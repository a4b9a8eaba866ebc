"""Synthetic labelled ECGs: ground truth sampling and signal rendering."""
