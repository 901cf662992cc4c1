"""Score weights into gradients for the tabular softmax, in one compiled pass over the trials.

For ``pi(.|s) = softmax(theta[s, :])`` the score of (s, a) is ``e_(s,a) - sum_b pi(b|s) e_(s,b)``,
so weights ``C[k, s, a]`` contract to ``g_k[s, a] = C[k, s, a] - pi(a|s) sum_b C[k, s, b]``
(the NumPy form is ``TabularSoftmax.contract_trials``; this is the same arithmetic in the same
order, without temporaries). ``out`` may be ``C`` itself, viewed as (K, S A): each state's
weights are summed before any of them is overwritten.
"""
from __future__ import annotations

from numba import njit


@njit(cache=True)
def contract_tabular(C, pi, out):
    K, S, A = C.shape
    for k in range(K):
        for s in range(S):
            tot = 0.0
            for b in range(A):
                tot += C[k, s, b]
            for a in range(A):
                out[k, s * A + a] = C[k, s, a] - pi[s, a] * tot
