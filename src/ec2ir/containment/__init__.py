"""The containment steps, the swap lanes, ec2ir's groups, the network-ACL edge and restore."""
