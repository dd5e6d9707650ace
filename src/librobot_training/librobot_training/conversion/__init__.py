"""The stages of the rosbag2 -> HDF5 conversion (librobot_training.bag_to_hdf5 runs them):

    base       message types, option values, ConversionError, the stop flag
    messages   pure conversions of deserialized messages
    sync       streams, episodes and the as-of sampling grid
    reading    topic selection and one pass over a bag (a bag left open by its recorder too)
    unclosed   storage files of a bag without metadata.yaml; MCAP files without their end
    writing    episode files, written atomically
"""
