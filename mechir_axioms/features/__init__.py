"""Sparse autoencoders on rankers: SAE files (SAELens, sparsify), the SAE itself, and splicing it into a ranker."""
