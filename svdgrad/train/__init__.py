"""Training with covariance pooling: data, schedules, the hybrid-protocol trainer, the study.

Command line: ``svdgrad train ...`` and ``svdgrad study hybrid ...`` (see ``cli``).
This package needs the ``dev`` extra (tqdm; scikit-image and scikit-learn for
the bundled datasets); ``import svdgrad`` never imports it.
"""
