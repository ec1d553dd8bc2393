#pragma once
// Sparse SGD matrix factorisation: owned by the offline-indexing issue (#4).
