"""Visual inspection on the device: camera frame → image model → pass/reject decision for each part."""
