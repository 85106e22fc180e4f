"""Where an audit's patching chunks run: in this process, or on the workers of a Ray cluster.

The auditing layer cuts patching into chunks (the unit it checkpoints) and hands each chunk to an executor
as a `Task` of one `Job`; the executor returns the chunks' results and the auditing layer alone writes them.
"""
