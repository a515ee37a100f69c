"""Hospital side: the node's data plane and governance, and the Flower apps it runs."""
