"""LibroBot drivers: ROS-free robot classes and embodiment specs; the driver node in driver_node."""
