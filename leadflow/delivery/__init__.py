"""Delivery: claimed outbox rows become sent emails, with every outcome recorded.

One concept per module, in the order a run uses them:

* ``session``: what the batches of one run share (loop, SMTP pool, database thread, helper);
* ``batch``: one batch, its claims and records overlapping the SMTP conversation;
* ``chunks``: how claimed rows are cut into chunks that are built, then sent;
* ``compose``: one claimed row rendered and built into wire bytes;
* ``helper``: building in a helper process while this one talks SMTP;
* ``smtp``: the configured SMTP transport;
* ``outcome``: what a delivery did, merged and summarized once.

This package imports nothing, so a helper process importing ``compose`` stays light.
"""
