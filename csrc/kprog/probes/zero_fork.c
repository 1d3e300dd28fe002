/* Build: cc -O2 -Wall -o /tmp/zero_fork csrc/kprog/probes/zero_fork.c ; run: /tmp/zero_fork [guard]  (read-only touched anon VMA across fork: copied page tables only if the VMA has an anon_vma) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
static long mf(void){struct rusage r;getrusage(RUSAGE_SELF,&r);return r.ru_minflt;}
int main(int argc,char**argv){
  size_t len=1<<20; int guard = argc>1;
  char *g = guard? mmap(NULL, len+2*4096, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS,-1,0):NULL;
  char *p = guard? mmap(g+4096, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED,-1,0)
                 : mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  volatile char *v=p; long m=mf(); for(size_t o=0;o<len;o+=4096)(void)v[o]; printf("parent read minflt=%ld\n", mf()-m);
  char cmd[128]; snprintf(cmd,sizeof cmd,"grep -A3 -i '^%lx' /proc/%d/smaps | head -4",(unsigned long)p,getpid()); system(cmd);
  fflush(stdout);
  if(fork()==0){ m=mf(); for(size_t o=0;o<len;o+=4096)(void)v[o]; printf("child read minflt=%ld\n", mf()-m); fflush(stdout); _exit(0);} wait(NULL); return 0;}
