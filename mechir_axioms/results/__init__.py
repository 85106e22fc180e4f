"""What an audit, a sweep, a comparison and an intervention found, as plain data: saved, loaded and read by the
report, the figures and the interfaces above, which never need the engines that produced them."""
