#include "harness.h"
TEST(nothing){ASSERT(1);}
TEST_MAIN()
