"""scanpy RNA recipe and TF-IDF + LSI ATAC recipe: a latent space that decodes back to features."""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp

from envs.preprocessing import preprocess
from helpers import tiny_counts_adata


def test_rna_latent_matches_scanpy_pca_and_decodes_back():
    adata = tiny_counts_adata(n_per_group=40, n_genes=30)
    fit = np.ones(adata.n_obs, dtype=bool)
    space, latent, expression = preprocess(adata, fit_mask=fit, n_latent=5, n_top_features=2000)
    reference = adata.copy()
    sc.pp.normalize_total(reference, target_sum=1e4)
    sc.pp.log1p(reference)
    sc.pp.pca(reference, n_comps=5)
    # Same subspace as scanpy's own PCA (up to sign), rescaled by one scalar.
    for k in range(5):
        r = np.corrcoef(latent[:, k], reference.obsm["X_pca"][:, k])[0, 1]
        assert abs(r) > 0.999
    assert np.isclose(np.mean(latent.var(axis=0)), 1.0, rtol=1e-4)
    np.testing.assert_allclose(space.encode(space.decode(latent)), latent, atol=1e-4)
    # Decoding a cell's latent state approximates its log-normalized expression better than the mean does.
    decoded = space.decode(latent)
    dense = expression.toarray()
    assert np.mean((decoded - dense) ** 2) < np.mean((space.feature_mean - dense) ** 2)


def test_latent_space_is_fitted_on_training_cells_only():
    adata = tiny_counts_adata(n_per_group=40, n_genes=30)
    train = adata.obs["perturbation"].to_numpy() != "B"
    space_train, _, _ = preprocess(adata, fit_mask=train, n_latent=4)
    space_all, _, _ = preprocess(adata, fit_mask=np.ones(adata.n_obs, dtype=bool), n_latent=4)
    assert not np.allclose(space_train.feature_mean, space_all.feature_mean)


def test_atac_tfidf_lsi_recipe():
    rng = np.random.default_rng(0)
    dense = rng.binomial(1, 0.1, size=(120, 300)).astype(np.float32)
    dense[:60, :40] = 1.0  # an accessible module in half the cells
    peaks = sp.csr_matrix(dense)
    adata = tiny_counts_adata(n_per_group=40, n_genes=300)
    adata.X = peaks
    space, latent, tfidf = preprocess(adata, fit_mask=np.ones(120, bool), n_latent=6, modality="atac")
    assert space.modality == "atac" and latent.shape == (120, 6) and tfidf.shape == (120, 300)
    # The module separates the two halves along some LSI component.
    pooled_std = np.sqrt((latent[:60].var(axis=0) + latent[60:].var(axis=0)) / 2)
    separation = np.abs(latent[:60].mean(axis=0) - latent[60:].mean(axis=0)) / pooled_std
    assert separation.max() > 3.0
    np.testing.assert_allclose(space.encode(space.decode(latent)), latent, atol=1e-4)
