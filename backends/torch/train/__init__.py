"""Runtime building blocks of regspec's training backend (plain Python APIs, no spec parsing).

Import the submodules directly; this package imports nothing so that ``regspec check`` stays
free of torch:

- ``models``: ``build_model`` (linear, mlp, cnn, transformer, "pkg.mod:Class"), ``load_user_object``
- ``data``: ``build_data`` -> ``DataBundle`` (digits, breast_cancer, diabetes, synthetic, user loaders)
- ``losses``: ``build_loss`` (named losses, callables, expression trees)
- ``optim``: ``build_optimizer``, ``current_lrs``, ``set_hparam``
- ``schedules``: ``build_schedule`` and schedule classes, ``Gate``
- ``selectors``: ``select_params``, ``select_modules``
- ``fx``: ``trace``, ``insert_taps`` -> ``TappedModel``, ``rewrite_activations``
- ``penalties``: ``act_l1``, ``flops``, ``orthogonality``, ``jacobian_fro``, ``anchor_l2``, ``snapshot``
"""
