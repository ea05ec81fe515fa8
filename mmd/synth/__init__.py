"""Synthetic training data: generators and selection against the real distribution."""
