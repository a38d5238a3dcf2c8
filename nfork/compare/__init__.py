"""Response comparison: does the candidate answer like the primary?

The engine (L{paths}, L{endpoints}, L{decode}, L{diff}, L{tally}) is pure:
it turns captured answers into differences and counts them per candidate,
endpoint and field.  L{runtime} feeds it from the fork, off the client's path.
"""
