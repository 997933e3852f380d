"""Graph propagation for the LightGCN family, built on torch-geometric.

The user-item graph has ``n_users + n_items`` nodes (items offset by ``n_users``) and the symmetric
normalisation of LightGCN (He et al., SIGIR 2020, eq. 3): A~ = D^-1/2 A D^-1/2. Because A~ is
symmetric, the backward pass of A~ @ X is A~ @ G with the same CSR matrix, which avoids the sparse
transpose that a generic sparse-dense product pays for in every backward pass.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch_geometric.nn import LGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import spmm, to_torch_csr_tensor

from distrec.models.indexing import take_rows

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def bipartite_edge_index(users: np.ndarray, items: np.ndarray, n_users: int) -> torch.Tensor:
    """Undirected edge index ``[2, 2 * nnz]`` of the user-item graph, duplicates removed."""
    pairs = np.unique(np.stack([users, items]).T.astype(np.int64), axis=0)
    u = torch.from_numpy(pairs[:, 0])
    i = torch.from_numpy(pairs[:, 1]) + n_users
    return torch.stack([torch.cat([u, i]), torch.cat([i, u])])


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """A~ = D^-1/2 A D^-1/2 (no self-loops) as a sparse CSR tensor, via PyG's ``gcn_norm``."""
    edge_index, weight = gcn_norm(edge_index, None, num_nodes=num_nodes, add_self_loops=False)
    return to_torch_csr_tensor(edge_index, weight, size=(num_nodes, num_nodes))


def rows_nnz_share(adj: torch.Tensor, rows: torch.Tensor) -> float:
    """The share of a CSR tensor's non-zeros that lie in ``rows``."""
    crow = adj.crow_indices()
    return float((crow[rows + 1] - crow[rows]).sum()) / adj.values().numel()


def csr_rows(adj: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The sub-matrix ``adj[rows, :]`` of a CSR tensor, as CSR."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    starts, ends = crow[rows], crow[rows + 1]
    lengths = ends - starts
    new_crow = torch.zeros(len(rows) + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(lengths, 0, out=new_crow[1:])
    offsets = torch.arange(int(new_crow[-1]), device=crow.device) - torch.repeat_interleave(new_crow[:-1], lengths)
    take = torch.repeat_interleave(starts, lengths) + offsets
    return torch.sparse_csr_tensor(new_crow, col[take], val[take], size=(len(rows), adj.shape[1]))


class _SymmetricSpMM(torch.autograd.Function):
    """Y = A X for symmetric sparse A; dX = A dY."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return spmm(adj, x)

    @staticmethod
    def backward(ctx, grad):
        return None, spmm(ctx.adj, grad)


class SymmetricLGConv(LGConv):
    """PyG's ``LGConv`` over a precomputed symmetric normalised adjacency (``normalize=False``),
    with the fused message-and-aggregate step differentiated through the same matrix."""

    def __init__(self):
        super().__init__(normalize=False)

    def message_and_aggregate(self, adj_t, x):
        return _SymmetricSpMM.apply(adj_t, x)


class LightGCNPropagation(torch.nn.Module):
    """LightGCN's layer combination (eq. 4): E = sum_k alpha_k E^(k), E^(k+1) = A~ E^(k), alpha_k = 1/(K+1).

    ``perturb(h, layer)`` (optional) transforms each propagated layer (SimGCL's noise);
    ``skip_ego`` drops E^(0) from the mean (SimGCL's choice)."""

    # Above this share of A~'s non-zeros in the rows a batch reads, the last layer is cheaper computed in
    # full: the row sub-matrix's backward pays a sparse transpose (a sort), 2-6x a full symmetric product
    # per non-zero on ML-1M and Gowalla (docs/benchmarks.md, "The last layer of a mini-batch").
    rows_max_nnz_share = 0.3

    def __init__(self, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.conv = SymmetricLGConv()
        self.rows_conv = LGConv(normalize=False)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, perturb=None, skip_ego: bool = False) -> torch.Tensor:
        """Final embeddings of every node."""
        layers = [] if skip_ego else [x]
        h = x
        for k in range(self.num_layers):
            h = self.conv(h, adj)
            if perturb is not None:
                h = perturb(h, k)
            layers.append(h)
        return torch.stack(layers).mean(0)

    def rows(
        self, x: torch.Tensor, adj: torch.Tensor, nodes: torch.Tensor, perturb=None, skip_ego: bool = False
    ) -> torch.Tensor:
        """Final embeddings of ``nodes`` only, equal to ``forward(...)[nodes]``: the last layer is
        computed for those rows alone (A~[nodes, :] @ E^(K-1)), which is all a mini-batch loss reads."""
        layers = [] if skip_ego else [take_rows(x, nodes)]
        h = x
        for k in range(self.num_layers - 1):
            h = self.conv(h, adj)
            if perturb is not None:
                h = perturb(h, k)
            layers.append(take_rows(h, nodes))
        last = self._last_layer(h, adj, nodes)
        if perturb is not None:
            last = perturb(last, self.num_layers - 1)
        layers.append(last)
        return torch.stack(layers).mean(0)

    def _last_layer(self, h: torch.Tensor, adj: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """(A~ h)[nodes]: from the row sub-matrix when the rows are few, else in full."""
        if rows_nnz_share(adj, nodes) > self.rows_max_nnz_share:
            return take_rows(self.conv(h, adj), nodes)
        return self.rows_conv(h, csr_rows(adj, nodes))
