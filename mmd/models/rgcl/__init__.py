"""RGCL (Mei et al., ACL 2024): retrieval-guided contrastive learning for hateful memes.

config.py  the knobs (no torch import)
model.py   the head: projections, fusion by product, an MLP to the embedding g, a logistic output
loss.py    the retrieval-guided contrastive loss
knn.py     hard-negative mining (through the vector store, or exact in torch) and the
           retrieval-based kNN classifier (RKC)
train.py   the training loop, saving, loading, the RKC database and prediction
"""
