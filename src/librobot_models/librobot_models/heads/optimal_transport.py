"""Minibatch optimal transport for OT-CFM: pair each action chunk with a noise sample so the total
squared distance is smallest (Tong et al. 2023; Pooladian et al. 2023), making flow paths straighter.

The pairing is an exact linear assignment, solved here by the Hungarian method with potentials
(shortest augmenting paths, O(n^3)); n is the batch size, so it costs milliseconds for n <= 256.
"""

from __future__ import annotations

import numpy as np
import torch


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """For a square cost (n, n), the permutation p minimising sum_i cost[i, p[i]] (row i -> column p[i]).

    Rows are added one at a time; each addition finds the cheapest augmenting path in the reduced
    costs cost[i, j] - u[i] - v[j] (a Dijkstra over columns) and updates the potentials u, v so that
    reduced costs stay >= 0 and are 0 on matched pairs, which proves the final matching optimal.
    Index 0 of u, v, match and way is a virtual column/row that starts every search.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n = cost.shape[0]
    if cost.ndim != 2 or cost.shape[1] != n:
        raise ValueError(f"linear_assignment needs a square cost matrix, got shape {cost.shape}")
    u = np.zeros(n + 1)  # row potentials (1-based rows)
    v = np.zeros(n + 1)  # column potentials (1-based columns)
    match = np.zeros(n + 1, dtype=np.int64)  # match[j]: the row matched to column j, 0 if none
    way = np.zeros(n + 1, dtype=np.int64)  # way[j]: the previous column on the path to j
    for row in range(1, n + 1):
        match[0] = row
        col = 0
        min_reduced = np.full(n + 1, np.inf)  # cheapest reduced cost seen to reach each column
        used = np.zeros(n + 1, dtype=bool)  # columns already on the search tree
        while True:
            used[col] = True
            i = match[col]
            reduced = cost[i - 1] - u[i] - v[1:]  # (n,) reduced costs from row i to columns 1..n
            better = ~used[1:] & (reduced < min_reduced[1:])
            min_reduced[1:][better] = reduced[better]
            way[1:][better] = col
            candidates = np.where(used[1:], np.inf, min_reduced[1:])
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[match[used]] += delta  # keep reduced costs on the tree at 0 ...
            v[used] -= delta
            min_reduced[~used] -= delta  # ... and shift the frontier by the same amount
            col = nxt
            if match[col] == 0:  # a free column: augment along the path back to the virtual column
                break
        while col:
            prev = way[col]
            match[col] = match[prev]
            col = prev
    permutation = np.empty(n, dtype=np.int64)
    permutation[match[1:] - 1] = np.arange(n)
    return permutation


def pair_noise(noise: torch.Tensor, actions: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Reorder noise (B, k, A) so that noise[i] is the OT partner of actions[i] (B, k, A).

    The cost is the squared distance over the non-padded steps of the action chunk.
    """
    keep = (~action_is_pad)[None, :, :, None].to(noise.dtype)  # (1, B, k, 1): padding of the action side
    cost = ((actions[None] - noise[:, None]) ** 2 * keep).sum(dim=(2, 3))  # (B noise, B actions)
    noise_for_action = linear_assignment(cost.detach().T.cpu().numpy())  # action i -> noise p[i]
    return noise[torch.as_tensor(noise_for_action, device=noise.device)]
