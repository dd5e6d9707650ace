"""LibroBot bringup: start the node graph from launch files or from Python."""
