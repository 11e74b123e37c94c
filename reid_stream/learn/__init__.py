"""Site adaptation: what a site's own stream and its operators teach about who is who, the learned similarity
space (camera bias removed, a metric fitted on that evidence), its versions, and when one is adopted."""
