// Sparse SGD matrix factorisation: owned by the offline-indexing issue (#4).
#include "core/sgd.hpp"
