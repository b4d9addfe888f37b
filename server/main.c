/* placeholder: replaced by the real server entry point in this same change */
int main(void) { return 0; }
