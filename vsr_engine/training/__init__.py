"""Where models are trained: one module per job, nothing heavy imported here.

    data.py          frame folders, videos, BI low-resolution inputs, random training windows
    common.py        Charbonnier loss, training precision (the CPU plan), fp16 safetensors export, loss plot
    evaluate.py      Y-PSNR on Vid4-style ground-truth folders (``vsr-engine eval``)
    loop.py          DSCVSR by feature distillation from official BasicVSR (``vsr-engine train dscvsr``)
    meta.py          the basicvsr-meta scale head (``python -m vsr_engine.training.meta``)
    distill_meta.py  DSCVSR distilled from basicvsr-meta, with/without ablation
    distill.py       a small BasicVSR distilled from a video teacher, --data-free (DFSR, CVPR 2021) or with data
    generator.py     the clip generator of data-free distillation (noise -> LR clip with smooth motion)
    adapt.py         unsupervised domain adaptation to the user's footage (USR-DA, ICCV 2021)
    cli.py           the ``train``, ``distill`` and ``adapt`` subcommands of ``vsr-engine``
"""
