"""Sessions, clients, error translation and discovery: the only layer that imports boto3."""
