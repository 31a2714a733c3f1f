"""The torch backend's general conic fallback: a DCP problem that no fast path of the torch backend
takes (``split`` refuses it) is canonicalised by CVXPY to ``min c^T x  s.t.  b - A x in K`` (zero,
nonnegative, second-order, PSD and exponential cones) and solved in torch by restarted,
preconditioned PDHG (PDLP's method with cone projections); CVXPY's inverse reductions map the
solution back to the spec's variables. See docs/conic.md.

``cones``: the cones and their projections; ``precondition``: Ruiz + Pock-Chambolle scaling;
``pdhg``: the solver; ``canon``: CVXPY's canonical form and the way back; ``program``: the backend's
entry points (``lower_conic``, ``solve_conic``)."""
